"""Constants shared by the HTTP API tests (a module of its own: test folders each have a conftest)."""
START = "/api/workflows/create-job-and-run"
TOKEN = "dapi-http-tests-0123456789abcdef-SECRET"
VALID = {"jobName": "nightly-load", "taskKey": "main", "notebookPath": "/Workspace/Users/me@contoso.com/load",
         "existingClusterId": "0923-164208-meows279"}
