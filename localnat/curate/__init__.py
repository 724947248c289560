"""The curation job: inputs -> validate -> tokenize -> score (Ray actors) -> scores/, rejects/
-> selection, leaderboard, report. Built on `localnat.scoring`."""
