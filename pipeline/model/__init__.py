"""The model: the base model to train from (the embedded pretrained DistilBERT, a local folder or a Hub id), loading a
saved reward model, the one encoding of a (prompt, answer) pair, and the one scoring engine (`RewardScorer`) that
training statistics, evaluation and every use of a trained model score through.

May import `pipeline.core` only.
"""
