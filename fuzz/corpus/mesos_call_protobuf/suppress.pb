

3d0c8f5e-0001‚	
storage