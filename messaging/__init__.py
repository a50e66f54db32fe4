"""Azure messaging that both entry points (triggers/) and activities use: Storage queues and the
settings of the event-driven callers and of completion notifications. Below both layers, so
neither imports the other."""
