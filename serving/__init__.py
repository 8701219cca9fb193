"""Product: the scoring service's image and the batch scoring job, and the tools that package a model into them.

Serving side of the data path: the scoring app (scoring/), its image, and the tools that package any tabular
MLflow model into a build context (context.py: its manifest, manifest.py; its runtime, runtime.py and compile.py),
serve it here as the image would (serve_model.py, `make serve`), run it in a container, score a table with it
(batch.py), and smoke-test a running service.

Owns: serving/scoring (copied alone into the image, where it is the top-level package `scoring`: it imports
nothing outside itself, hence its relative imports), the build context, the container tooling, the smoke test.
May import: nothing else of ours. The model arrives through MLflow, never through training code.
"""

MAY_IMPORT: tuple[str, ...] = ()
