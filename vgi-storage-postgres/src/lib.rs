//! vgi-storage backend: postgres (work in progress).
