"""Corpus formats: one reader per `corpus.format` (audiofolder, commonvoice, kaldi, elan), each returning the same
utterances, and the synthetic demo corpus. The `import` stage (asrflow.import_) picks the reader."""
