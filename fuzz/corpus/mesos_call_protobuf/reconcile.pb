

3d0c8f5e-0001	J


t1
3d0c8f5e-S0