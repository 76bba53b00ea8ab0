"""The checkpoint manifest (manifest.json) and the default export folder (models/exports, git-ignored)."""
