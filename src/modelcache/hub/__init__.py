"""Everything about the Hugging Face Hub and its cache layout, as modelcache's download and `path` use it.

- `names`: the input checks (repo id, type, revision, file name), a repo's cache folder, the cache root;
- `lookup`: the offline lookup of a cached snapshot (`modelcache path`, `get_cached_model_path`);
  imports nothing that writes or scans;
- `remote`: a commit's file list, from `trees/<commit>.json` or the Hub;
- `reuse`: which files on this machine may hold a wanted blob's bytes (read-only);
- `catalog`: the repos in the cache, for `DownloadManager.list_models`;
- `errors`: a Hub or download failure as one line;
- `fetch`: `download_snapshot`, the download entry point: the one module here that imports `act`
  (placing reused blobs, writing a ref). Every other module here only reads.
"""
