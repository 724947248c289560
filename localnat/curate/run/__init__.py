"""A run and its passes: the run directory (its lease, identity and commit markers), a
declared pass, its Ray graph and the sink that writes its parts, Ray's start and progress,
the student's identity and the checks made on it before Ray, a call's cost in tokens."""
