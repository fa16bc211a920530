"""The indexer's pure core: which containers exist, which are fit, and who plays where."""
