"""One APIRouter per resource, collected in app.api.main."""
