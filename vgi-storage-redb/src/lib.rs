//! vgi-storage backend: redb (work in progress).
