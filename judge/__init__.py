"""The network's judge: verifier rotation, committee consensus, scores and penalties, the
verification schedule and the indexer's desk that hands checks out and takes verdicts in."""
