from galerne.cli import app

app()
