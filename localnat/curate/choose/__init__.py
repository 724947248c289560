"""Choosing: the reduce over a pass's scores, the teacher leaderboard and which signal
to trust, each prompt's response (selection, racing), a teacher ranking that stops, and the
selected rows written back with their input columns (dataset)."""
