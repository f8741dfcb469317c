"""One APIRouter per resource, collected in app.main."""
