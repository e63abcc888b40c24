//! vgi-storage backend: sqlite (work in progress).
