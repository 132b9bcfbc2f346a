"""One host running every part: the supervisor, its status and metrics endpoints, the demo call."""
