"""Serving side of the data path: the scoring app (scoring/), its image, and the tools that
package a registered model into a build context and smoke-test a running service."""
