"""The bundled demo model and its twin that keeps capitals secret, shipped as package data.

``models/xray-demo/`` and ``models/xray-demo-secret/`` are found wherever the package is installed.
"""
