"""The bundled demo model (``models/xray-demo/``), shipped as package data so it is found wherever it is installed."""
