"""tunesmith.serving"""
