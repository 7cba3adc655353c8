"""Publishing a trained model: the quality gate, the model directory written atomically (weights, tokenizer,
evaluation, model card), and the push to the Hub.

May import `pipeline.core`, `pipeline.model` and `pipeline.evaluation`.
"""
