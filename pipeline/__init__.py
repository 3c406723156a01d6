"""autoaug's library: data, augmentation, models, the trainer, the searches and the DVC stages
(``pipeline.stages``); ``autoaug`` (``pipeline.cli``) is its command line."""
