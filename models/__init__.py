"""Product: the model modules (the two shipped examples; a team adds its own).

The models this project trains and serves: one module per model, named after the stack files' `name`
(`credit-default` -> models/credit_default.py). Each declares its data contract, how it is built and searched, and
the gate's metric (training/contract.py says what, docs/bring-your-own-model.md how). The two modules here are the
examples the project ships; a team adds its own beside them.

Owns: what each model is. May import: training (the contract's types and the standard preprocessing).
"""

MAY_IMPORT: tuple[str, ...] = ("training",)
