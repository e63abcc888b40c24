//! vgi-storage backend: memory (work in progress).
