"""Model storage: the manifest, the local volume, and (later) S3 sync. Knows nothing of HTTP or llama.cpp."""
