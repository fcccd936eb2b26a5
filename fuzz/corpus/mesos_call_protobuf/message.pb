

3d0c8f5e-0001
R

3d0c8f5e-S0
e1hello