

3d0c8f5e-0001š:
5
rootstorage-consumer
3d0c8f5e-0001bstorageb**