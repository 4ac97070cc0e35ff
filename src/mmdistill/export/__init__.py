"""Export of trained students to the runtime they ship on (ONNX / ONNX Runtime) and its verification."""
