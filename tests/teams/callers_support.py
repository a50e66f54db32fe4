"""Constants and the two-team policy shared by the caller tests (a module of its own: test folders each have a conftest)."""
from __future__ import annotations

TOKEN = "dapi-callers-tests-0123456789abcdef-SECRET"
A, B, C = ("aaaaaaaa-0000-4000-8000-00000000000a", "bbbbbbbb-0000-4000-8000-00000000000b",
           "cccccccc-0000-4000-8000-00000000000c")
SP_A, SP_B = "5a5a5a5a-0000-4000-8000-0000000005a0", "5b5b5b5b-0000-4000-8000-0000000005b0"
CLUSTER = "0923-164208-meows279"


def policy_document(job_of_b: int) -> dict:
    return {
        "callers": {
            A: {"existingJobs": {"names": ["team-a-*"]},
                "create": {"pathPrefixes": ["/Workspace/Teams/a/"], "oneTime": True, "libraries": False},
                "compute": {"clusterIds": [CLUSTER], "serverless": True},
                "runAs": SP_A, "tags": {"team": "a"}},
            B: {"existingJobs": {"ids": [job_of_b], "names": ["team-b-*"]},
                "create": {"pathPrefixes": ["/Workspace/Teams/b/"], "oneTime": True, "libraries": False},
                "compute": {"clusterIds": [CLUSTER], "serverless": True},
                "secretScopes": ["team-b"],
                "runAs": SP_B, "tags": {"team": "b"}, "limits": {"concurrentWorkflows": 4}},
        },
        "sources": {"queue:workflow-requests": B},
        "default": {},
    }
