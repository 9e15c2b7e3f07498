"""HTTP layer: FastAPI routers, error mapping, SSE. Thin: every decision is made in `services`."""
