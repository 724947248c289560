"""The score cache: the run's `ScoreCache` (score_cache: its namespaces, each per student
and settings), what a reader sees of one (namespace), the key index actors look rows up in
(lookup), and its one writer (writer: settings, appended parts, readers, compaction)."""
