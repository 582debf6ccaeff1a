"""The stores modelcache reads, one module per store (`folders.py` holds local_dir and plain).

Each store module declares its kind and its `StoreSpec` (`registry.py`: title, reader, where it
is found, its partial files and what guards them, the link methods its tool tolerates) and reads
its layout into `FileRecord`s with what `base.py` shares (the walk, the collector). `registry.py`
finds the modules of this package itself: this file imports none of them. Nothing here writes.
"""
