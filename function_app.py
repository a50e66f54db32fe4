"""The Azure Functions app: one blueprint per feature (samples-v2/blueprint style).

HTTP routes use function-level keys; the orchestrator and activities have no public surface."""
import azure.durable_functions as df
import azure.functions as func

from activities.jobs import bp as activities_bp
from orchestrators.create_job_and_run import bp as orchestrator_bp
from triggers.http_api import bp as http_api_bp

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (orchestrator_bp, activities_bp, http_api_bp):
    app.register_functions(blueprint)
