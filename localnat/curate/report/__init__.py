"""What a person reads: the manifest written last, the leaderboard rendered
(teachers.md, .png, the terminal summary), `localnat show` and `plot`, the dry run."""
