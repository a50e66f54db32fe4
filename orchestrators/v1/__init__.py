"""FROZEN: the code path of workflows started by release 1.0 (orchestration version "" or "1.0").

A workflow can wait for days; an upgrade meets workflows that started on the previous code, and
replaying their history on different code fails or misbehaves. So the previous release's
orchestrator and the policy it used are kept here unchanged, and the orchestrator dispatches on
`context.version` (orchestrators/versions.py). Never edit these modules: delete them once no
1.0 workflow is left running (README, "Upgrading")."""
