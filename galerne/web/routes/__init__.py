"""The web app's routers; `mount_web` includes each with the session and CSRF dependencies."""
