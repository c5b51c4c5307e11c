"""The run tags a queue trigger's run carries: written by the queue sensors, read by the jobs, the run
coordinator and the run-status reactions. Here so that none of them imports another for a name. And the
kind of work every job does (`wrk/flow`), a tag on the job itself so the UI's job and run lists can be
filtered by it (housekeeping apart from the flows' jobs); the run coordinator sets it on every run too."""

TAG_ID = "wrk/queue_id"
TAG_KIND = "wrk/queue_kind"
TAG_TOKEN = "wrk/claim_token"
TAG_ATTEMPT = "wrk/attempt"
TAG_TENANT = "wrk/tenant_id"  # the tag the run coordinator's per-tenant limit counts
TAG_RETRYABLE = "wrk/retryable"  # a run sets "false" when retrying cannot help (see mark_permanent)
TAG_ALERTED = "wrk/alerted"  # a run sets "true" when it already told ops what went wrong
TAG_FLOW = "wrk/flow"
HOUSEKEEPING = {TAG_FLOW: "housekeeping"}  # sweepers, relays, deliveries, reconciliation: not a flow's own work
