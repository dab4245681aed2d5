# Shortcuts; each target calls the script that does the work, so the scripts stay the one source.
.PHONY: test run bench vectors clean

test:
	scripts/test

run:
	scripts/run

bench:
	scripts/bench

vectors:
	python3 Protocol/vectors/generate.py

clean:
	rm -rf .build Bench/.build
