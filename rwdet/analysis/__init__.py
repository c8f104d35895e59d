"""The paper's analyses as tools: graph statistics and pictures, generator comparison over
seeds, graph damage, FLOPs tables (Xie et al., ICCV 2019, sec. 4-5 and figures 2-8)."""
