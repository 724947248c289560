"""Reading the inputs: which files a run reads (plan), their formats, each row's
fields and its reject reason (records), read in commit chunks (chunks)."""
