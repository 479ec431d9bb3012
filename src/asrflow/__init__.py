"""asrflow: speaker-independent fine-tuning of wav2vec2/MMS CTC models on tiny corpora."""

__version__ = "0.1.0"
