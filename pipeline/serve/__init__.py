"""Serve a trained model over HTTP: `python -m pipeline.serve --model DIR` answers `POST /score` (pairs, text or
conversational messages), OpenRLHF's `POST /get_reward` and `GET /health`. Requests of all clients are coalesced
into token-budget batches scored by one `RewardScorer` replica per device, in worker threads; a bounded queue,
request limits and an optional bearer key keep one client from hurting the others.

May import `pipeline.core`, `pipeline.data` and `pipeline.model`.
"""
