"""The score cache: a namespace per student and settings (namespace), the key index
actors look rows up in (lookup), and the compaction that keeps a year of nights small."""
