"""The training stages: the teacher's fine-tuning and every student's distillation.

- :mod:`.ops`: the four distillation operators (soft-label cross-entropy, hidden-state MSE,
  attention MSE, PKD patience loss) and the plain hard-label loss.
- :mod:`.recipes`: one registered recipe per algorithm (kd, distilled_lstm, bert_pkd, tinybert,
  theseus, none): what a student needs, how it is built and its phases' losses.
- :mod:`.train`: the generic training loop; :mod:`.resume`: the resume state and whose it is.
- :mod:`.teacher`: fine-tuning the teacher; :mod:`.student`: running a student's recipe.
- :mod:`.logit_cache`: the teacher's logits, computed once per task; :mod:`.layers`: a student's
  initial layers exported from the teacher.
"""
