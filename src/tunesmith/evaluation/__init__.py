"""tunesmith.evaluation"""
