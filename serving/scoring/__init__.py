"""The scoring service that runs inside the image. It depends on the serving runtime only (FastAPI, uvicorn,
onnxruntime, numpy); the sklearn runtime adds scikit-learn, pandas and skops, and the pyfunc runtime mlflow-skinny
and the model's own requirements, imported only when the manifest names that runtime (scoring/model.py)."""
