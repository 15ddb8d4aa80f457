"""OpenAlgo REST client and its error ladder. Imports nothing else of ours (usable by both processes)."""
