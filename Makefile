# flowerbed: every target creates .venv itself from a bare Python 3.11/3.12.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUNS   ?= runs

.PHONY: install demo test bench clean leaderboard

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing flowerbed and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install --upgrade pip > $(VENV)/install.log 2>&1 \
	  && $(BIN)/python -m pip install -e ".[test]" >> $(VENV)/install.log 2>&1 \
	  || { tail -n 30 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

# FedAvg vs FedProx on embedded digits, 10 clients, Dirichlet(0.5), 20 rounds (a few minutes on 2 cores).
demo: $(STAMP)
	$(BIN)/flowerbed partitions experiment=demo --out $(RUNS)/demo/partitions.png
	$(BIN)/flowerbed run experiment=demo algorithm=fedavg output.dir=$(RUNS)/demo/fedavg overwrite=true
	$(BIN)/flowerbed run experiment=demo algorithm=fedprox output.dir=$(RUNS)/demo/fedprox overwrite=true
	$(BIN)/flowerbed report $(RUNS)/demo/fedavg $(RUNS)/demo/fedprox --out $(RUNS)/demo/report
	@echo "results: $(RUNS)/demo/fedavg and $(RUNS)/demo/fedprox (metrics.jsonl, summary.json); partition heat map: $(RUNS)/demo/partitions.png; report: $(RUNS)/demo/report/report.md"

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Engines (and pfl-research, if installed) on performance.md's workloads; B1 needs a GPU: make bench BENCH="b1 b2".
BENCH ?= b2
bench: $(STAMP)
	$(BIN)/flowerbed bench $(BENCH) --repeats 3 --out $(RUNS)/bench

# Every algorithm that applies on digits, 5 partition settings x 2 seeds, 20 local steps each per round -> docs/results/leaderboard.md (~30 min on 2 cores).
LEADERBOARD ?= --seeds 0,1 --rounds 10 --steps 20
leaderboard: $(STAMP)
	$(BIN)/python -m experiments.leaderboard $(LEADERBOARD) --dir $(RUNS)/leaderboard --out docs/results

clean:
	rm -rf $(VENV) $(RUNS)
