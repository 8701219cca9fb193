"""The scoring service that runs inside the image. It depends on the serving runtime only
(FastAPI, uvicorn, onnxruntime, numpy): no MLflow, no training libraries."""
