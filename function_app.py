"""The Azure Functions app: one blueprint per feature (samples-v2/blueprint style).

HTTP routes use function-level keys (anonymous at the host when WORKFLOW_AUTH_TENANT_ID is set: the
app then requires an Entra ID token on each), except two that set their own level: the Databricks
notification endpoint (HTTP Basic, docs/callers.md) and the OpenAPI document (no secret in it).
The orchestrator, activities and the registry entity have no public surface; one timer watches the
workspace's runs for every waiting workflow, another purges finished workflows' history."""
import azure.durable_functions as df
import azure.functions as func

import telemetry

from activities.jobs import bp as activities_bp
from activities.notifications import bp as notifications_bp
from entities.awaited_runs import bp as awaited_runs_bp
from entities.caller_definitions import bp as caller_definitions_bp
from orchestrators.create_job_and_run import bp as orchestrator_bp
from triggers.databricks_webhook import bp as databricks_webhook_bp
from triggers.event_grid import bp as event_grid_bp
from triggers.http_api import bp as http_api_bp
from triggers.maintenance import bp as maintenance_bp
from triggers.openapi import bp as openapi_bp
from triggers.queue_trigger import bp as queue_trigger_bp
from triggers.results_api import bp as results_api_bp
from triggers.run_watcher import bp as run_watcher_bp

import os

# With Entra ID configured the app validates a bearer token on every HTTP API route itself
# (callers/identity.py), so the routes need no function key: a Logic App's managed identity calls
# with no secret at all. Read when the worker indexes the functions (a settings change restarts it).
ENTRA_ID = bool((os.environ.get("WORKFLOW_AUTH_TENANT_ID") or "").strip())
app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS if ENTRA_ID else func.AuthLevel.FUNCTION)
for blueprint in (orchestrator_bp, activities_bp, notifications_bp, awaited_runs_bp, caller_definitions_bp,
                  http_api_bp, event_grid_bp, queue_trigger_bp, databricks_webhook_bp, run_watcher_bp, openapi_bp,
                  maintenance_bp, results_api_bp):
    app.register_functions(blueprint)

# Last, once everything is imported, so its background thread does not compete with the imports
# that index the functions: spans and metrics go to Application Insights when
# APPLICATIONINSIGHTS_CONNECTION_STRING is set (the exporter is set up off this path, and what is
# recorded before it is ready is kept for it); otherwise nothing is loaded (telemetry/setup.py).
telemetry.configure()
