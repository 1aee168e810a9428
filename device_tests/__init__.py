"""The parity suite that travels to boards: run a bundle's TFLite variants, compare with Keras.

Needs only numpy and one TFLite interpreter (ai-edge-litert, tflite-runtime or, as a last
resort, tensorflow.lite). Runs on Python 3.9+ with numpy 1.x or 2.x, from the repository
(`edgepipe.device_tests`) or copied alone to a board (`python -m device_tests.runner BUNDLE`).
The bundle format is described in docs/bundle.md.
"""
